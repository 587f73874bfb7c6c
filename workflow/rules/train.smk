# Stage 2: train every learned method once per dataset (shared by all experiments using it).
# Only model.pt is declared: checkpoint.pt, loss.csv and train.json live beside it and are never
# deleted by Snakemake, so a rerun of an interrupted job resumes from checkpoint.pt.


rule train:
    input:
        data="data/{dataset}/dataset.json",
    output:
        "results/{dataset}/models/{model}/model.pt",
    wildcard_constraints:
        model=LEARNED_RUN_REGEX,
    params:
        launcher=train_launcher,
        method=lambda wildcards: model_method(wildcards.model)[0],
        data=lambda wildcards, input: os.path.dirname(input.data),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        args=train_args,
    threads: lambda wildcards: train_settings(wildcards)["threads"]
    resources:
        gpu=train_gpus,
        runtime=lambda wildcards, attempt: train_settings(wildcards)["runtime"] * attempt,
        mem_mb=lambda wildcards, attempt: train_settings(wildcards)["mem_mb"] * attempt,
    log:
        "logs/{dataset}/train/{model}.log",
    benchmark:
        "logs/benchmarks/{dataset}/train/{model}.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "{params.launcher} train {params.method} --data {params.data} --out {params.out} "
        "{params.args} > {log} 2>&1"
