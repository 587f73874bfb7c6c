# Stage 3: one job per (experiment, run, test pair). `regbench register` times the method with
# its own timer, then scores the field (warped.nii.gz, warped_labels.nii.gz, metrics.json).
# `register` runs the methods that are not learned (CPU), `register_learned` the trained networks
# (a GPU where register.device is cuda), so a profile can send them to different partitions.
# External methods (workflow/rules/methods/*.smk) write field.nii.gz and runtime.json instead,
# and `evaluate_external` scores them the same way.


rule register:
    input:
        unpack(register_input),
    output:
        "results/{dataset}/pairs/{experiment}/{run}/{moving}/{fixed}/metrics.json",
    wildcard_constraints:
        run=CLASSIC_RUN_REGEX,
    params:
        method=lambda wildcards: run_of(wildcards).method,
        data=lambda wildcards, input: os.path.dirname(input.data),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        args=register_args,
        cleanup=volume_cleanup,
    threads: config["register"]["threads"]
    resources:
        runtime=config["register"]["runtime"],
        mem_mb=config["register"]["mem_mb"],
    log:
        "logs/{dataset}/register/{experiment}/{run}/{moving}/{fixed}.log",
    benchmark:
        "logs/benchmarks/{dataset}/register/{experiment}/{run}/{moving}/{fixed}.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench register {params.method} --data {params.data} --moving {wildcards.moving} "
        "--fixed {wildcards.fixed} --out {params.out} {params.args} > {log} 2>&1"
        "{params.cleanup}"


use rule register as register_learned with:
    wildcard_constraints:
        run=LEARNED_RUN_REGEX,
    resources:
        gpu=REGISTER_GPUS,
        runtime=config["register"]["runtime"],
        mem_mb=config["register"]["mem_mb"],


rule evaluate_external:
    input:
        data="data/{dataset}/dataset.json",
        field="results/{dataset}/pairs/{experiment}/{run}/{moving}/{fixed}/field.nii.gz",
        runtime="results/{dataset}/pairs/{experiment}/{run}/{moving}/{fixed}/runtime.json",
    output:
        "results/{dataset}/pairs/{experiment}/{run}/{moving}/{fixed}/metrics.json",
    wildcard_constraints:
        run=EXTERNAL_RUN_REGEX,
    params:
        data=lambda wildcards, input: os.path.dirname(input.data),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    threads: 1
    resources:
        runtime=config["register"]["runtime"],
        mem_mb=config["register"]["mem_mb"],
    log:
        "logs/{dataset}/evaluate/{experiment}/{run}/{moving}/{fixed}.log",
    benchmark:
        "logs/benchmarks/{dataset}/evaluate/{experiment}/{run}/{moving}/{fixed}.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench evaluate --data {params.data} --moving {wildcards.moving} "
        "--fixed {wildcards.fixed} --field {input.field} --runtime {input.runtime} "
        "--out {params.out} > {log} 2>&1"
