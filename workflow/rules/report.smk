# Stage 5: tables (results/{dataset}/tables/) and figures (figures/{dataset}/), each in the HTML
# report (snakemake --report report.html) with its caption from workflow/report/.
# Tables are made for the experiments named main (Table 1), ablation and slice_spacing; the
# figures show the main experiment (Fig. 4 box plots, Dice against time, Fig. 3), the trained
# figures.method (Fig. 2) on the figure pair (by default the first test pair), and the learning
# curves of every trained model.


rule tables_main:
    input:
        "results/{dataset}/main/per_pair.csv",
    output:
        tables=[
            report(
                f"results/{{dataset}}/tables/table1_{convention}.csv",
                caption="../report/table1.rst",
                category="{dataset}",
                subcategory="Tables",
                labels={"table": f"Table 1 ({convention})"},
            )
            for convention in CONVENTIONS
        ],
        text=expand(
            "results/{{dataset}}/tables/table1_{convention}.{ext}",
            convention=CONVENTIONS,
            ext=["md", "tex"],
        ),
        stats=report(
            "results/{dataset}/tables/table1_stats.csv",
            caption="../report/stats.rst",
            category="{dataset}",
            subcategory="Tables",
            labels={"table": "Table 1 tests"},
        ),
        pairwise=report(
            "results/{dataset}/tables/table1_pairwise.csv",
            caption="../report/pairwise.rst",
            category="{dataset}",
            subcategory="Tables",
            labels={"table": "Table 1 pairwise tests"},
        ),
    params:
        out=lambda wildcards, output: os.path.dirname(output.stats),
    log:
        "logs/{dataset}/tables/main.log",
    benchmark:
        "logs/benchmarks/{dataset}/tables/main.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench tables --kind main --per-pair {input} --dataset {wildcards.dataset} "
        "--out-dir {params.out} > {log} 2>&1"


rule tables_experiment:
    input:
        "results/{dataset}/{kind}/per_pair.csv",
    output:
        table=report(
            "results/{dataset}/tables/{kind}.csv",
            caption="../report/experiment_table.rst",
            category="{dataset}",
            subcategory="Tables",
            labels={"table": "{kind}"},
        ),
        text=expand("results/{{dataset}}/tables/{{kind}}.{ext}", ext=["md", "tex"]),
        stats=report(
            "results/{dataset}/tables/{kind}_stats.csv",
            caption="../report/stats.rst",
            category="{dataset}",
            subcategory="Tables",
            labels={"table": "{kind} tests"},
        ),
        pairwise=report(
            "results/{dataset}/tables/{kind}_pairwise.csv",
            caption="../report/pairwise.rst",
            category="{dataset}",
            subcategory="Tables",
            labels={"table": "{kind} pairwise tests"},
        ),
    wildcard_constraints:
        kind="ablation|slice_spacing",
    params:
        out=lambda wildcards, output: os.path.dirname(output.stats),
    log:
        "logs/{dataset}/tables/{kind}.log",
    benchmark:
        "logs/benchmarks/{dataset}/tables/{kind}.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench tables --kind {wildcards.kind} --per-pair {input} "
        "--dataset {wildcards.dataset} --out-dir {params.out} > {log} 2>&1"


rule figures:
    input:
        "results/{dataset}/main/per_pair.csv",
    output:
        images=[
            report(
                f"figures/{{dataset}}/{stem}_{convention}.png",
                caption=f"../report/{stem}.rst",
                category="{dataset}",
                subcategory="Figures",
                labels={"figure": f"{stem} ({convention})"},
            )
            for stem in ("fig4", "dice_time", "dice_regularity")
            for convention in CONVENTIONS
        ],
        pdf=expand(
            "figures/{{dataset}}/{stem}_{convention}.pdf",
            stem=["fig4", "dice_time", "dice_regularity"],
            convention=CONVENTIONS,
        ),
    params:
        out=lambda wildcards, output: os.path.dirname(output.pdf[0]),
    log:
        "logs/{dataset}/figures/figures.log",
    benchmark:
        "logs/benchmarks/{dataset}/figures/figures.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench figures --per-pair {input} --dataset {wildcards.dataset} "
        "--out-dir {params.out} > {log} 2>&1"


rule figure_pyramid:
    input:
        data=manifest("{dataset}"),
        model=lambda wildcards: model_path(wildcards.dataset, config["figures"]["method"]),
    output:
        png=report(
            "figures/{dataset}/fig2_pyramid.png",
            caption="../report/fig2.rst",
            category="{dataset}",
            subcategory="Figures",
            labels={"figure": "Fig. 2 pyramid"},
        ),
        pdf="figures/{dataset}/fig2_pyramid.pdf",
    params:
        data=lambda wildcards, input: os.path.dirname(input.data),
        pair=lambda wildcards: "--moving {} --fixed {}".format(*figure_pair(wildcards.dataset)),
        stem=lambda wildcards, output: output.pdf.removesuffix(".pdf"),
        device=REGISTER["device"],
    threads: REGISTER["threads"]
    resources:
        gpu=REGISTER_GPUS,
        runtime=scaled(REGISTER["runtime"]),
        mem_mb=scaled(REGISTER["mem_mb"]),
    log:
        "logs/{dataset}/figures/fig2_pyramid.log",
    benchmark:
        "logs/benchmarks/{dataset}/figures/fig2_pyramid.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench figure-pyramid --data {params.data} {params.pair} --checkpoint {input.model} "
        "--device {params.device} --threads {threads} --out-stem {params.stem} > {log} 2>&1"


rule figure_learning_curves:
    input:
        lambda wildcards: [model_path(wildcards.dataset, m) for m in models(wildcards.dataset)],
    output:
        png=report(
            "figures/{dataset}/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="{dataset}",
            subcategory="Figures",
            labels={"figure": "Learning curves"},
        ),
        pdf="figures/{dataset}/learning_curves.pdf",
    params:
        models=lambda wildcards, input: " ".join(
            f"--model-dir {shlex.quote(f'{model_label(m)}={os.path.dirname(path)}')}"
            for m, path in zip(models(wildcards.dataset), input)
        ),
        stem=lambda wildcards, output: output.pdf.removesuffix(".pdf"),
    log:
        "logs/{dataset}/figures/learning_curves.log",
    benchmark:
        "logs/benchmarks/{dataset}/figures/learning_curves.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench figure-learning-curves {params.models} --out-stem {params.stem} > {log} 2>&1"


rule figure_warped:
    input:
        data=manifest("{dataset}"),
        metrics=lambda wildcards: figure_pair_metrics(wildcards.dataset),
    output:
        png=report(
            "figures/{dataset}/fig3_warped.png",
            caption="../report/fig3.rst",
            category="{dataset}",
            subcategory="Figures",
            labels={"figure": "Fig. 3 warped"},
        ),
        pdf="figures/{dataset}/fig3_warped.pdf",
    params:
        data=lambda wildcards, input: os.path.dirname(input.data),
        pair=lambda wildcards: "--moving {} --fixed {}".format(*figure_pair(wildcards.dataset)),
        methods=lambda wildcards, input: " ".join(
            f"--method-dir {shlex.quote(f'{run_label(run)}={os.path.dirname(path)}')}"
            for run, path in zip(runs("main"), input.metrics)
        ),
        stem=lambda wildcards, output: output.pdf.removesuffix(".pdf"),
    log:
        "logs/{dataset}/figures/fig3_warped.log",
    benchmark:
        "logs/benchmarks/{dataset}/figures/fig3_warped.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench figure-warped --data {params.data} {params.pair} {params.methods} "
        "--out-stem {params.stem} > {log} 2>&1"
