# Stage 4: one table row per registered pair: results/{dataset}/{experiment}/per_pair.csv.


rule aggregate:
    input:
        metrics_files,
    output:
        "results/{dataset}/{experiment}/per_pair.csv",
    params:
        runs=lambda wildcards: " ".join(
            f"--from-dir {pair_dir(wildcards.dataset, wildcards.experiment, run.name)}"
            for run in runs(wildcards.experiment)
        ),
    log:
        "logs/{dataset}/aggregate/{experiment}.log",
    benchmark:
        "logs/benchmarks/{dataset}/aggregate/{experiment}.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench aggregate --dataset {wildcards.dataset} --experiment {wildcards.experiment} "
        "{params.runs} --out {output} > {log} 2>&1"
