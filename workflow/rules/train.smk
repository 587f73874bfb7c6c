# Stage 2: train every learned method once per dataset (shared by all experiments using it).
# The rule owns its whole folder results/{dataset}/models/{model}/ but declares only model.pt:
# checkpoint.pt, loss.csv and train.json live beside it and are never deleted by Snakemake, so a
# rerun of an interrupted job resumes from checkpoint.pt. When the data or the train settings
# change, Snakemake reruns the job (newer dataset.json, changed params) and --replace-stale moves
# the old training, whose identity (method, options, settings, data fingerprint) differs, into the
# folder's stale/ and trains afresh: no manual deletion. One folder per model rather than per
# settings: the data fingerprint is not known when the DAG is built.


rule train:
    input:
        data=manifest("{dataset}"),
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
        threads=train_threads,
    threads: lambda wildcards: train_settings(wildcards)["threads"]
    # The longest jobs, and everything learned waits for them: start them first.
    priority: 50
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
        "--replace-stale --threads {params.threads} {params.args} > {log} 2>&1"
