# Stage 3: registration, then scoring, in separate jobs.
#
# Every registration job writes field.nii.gz and runtime.json into the pair's folder
# results/{dataset}/pairs/{experiment}/{run}/{moving}/{fixed}/ (`regbench register-pairs`: the
# method's own timing of each pair; --replace-stale deletes the pairs of another registration
# setup, of other options or another checkpoint, that the folder held, as Snakemake reruns it
# after a change); `evaluate_{dataset}` then scores every pair of a run in one
# CPU job (`regbench evaluate-pairs`), the same way for every method, external ones included
# (metrics.json, and warped.nii.gz and warped_labels.nii.gz where volumes are kept).
# - `register`: a method that is not learned, one job per pair (CPU; grouped on a cluster).
# - `register_learned_{dataset}`: a trained network, ONE job per run registering all its test
#   pairs (the network loaded once; the GPU where register.device is cuda), so a GPU job does
#   GPU work only. `register_run_{dataset}`: the same, on the CPU, for a method marked `per_run`
#   (one whose set-up costs more than a pair, such as identity).
# - an external method: the rules of its rule file (workflow/rules/methods/*.smk).
# With register.keep_volumes false the suite's fields are temp() (Snakemake deletes each once its
# pair is scored, and does not redo a registration for them) and scoring writes no warped
# volumes, except for the figure pair: `register_figure_pair` registers it, keeping its
# field, for the methods that are not learned.

PAIR = "results/{dataset}/pairs/{experiment}/{run}/{moving}/{fixed}"


rule register:
    input:
        data=manifest("{dataset}"),
    output:
        field=field_output(f"{PAIR}/{FIELD_FILE}", REGISTER["keep_volumes"]),
        runtime=f"{PAIR}/{RUNTIME_FILE}",
    wildcard_constraints:
        run=CLASSIC_RUN_REGEX,
    params:
        method=lambda wildcards: run_of(wildcards).method,
        data=lambda wildcards, input: os.path.dirname(input.data),
        out_root=lambda wildcards, output: run_folder(output.runtime),
        args=lambda wildcards: register_args(run_of(wildcards)),
    threads: REGISTER["threads"]
    group:
        "register_cpu"
    resources:
        runtime=scaled(REGISTER["runtime"]),
        mem_mb=scaled(REGISTER["mem_mb"]),
    log:
        "logs/{dataset}/register/{experiment}/{run}/{moving}/{fixed}.log",
    benchmark:
        "logs/benchmarks/{dataset}/register/{experiment}/{run}/{moving}/{fixed}.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench register-pairs {params.method} --data {params.data} "
        "--pair {wildcards.moving} {wildcards.fixed} --out-root {params.out_root:q} "
        "--replace-stale {params.args} > {log} 2>&1"


use rule register as register_figure_pair with:
    output:
        field=f"{PAIR}/{FIELD_FILE}",
        runtime=f"{PAIR}/{RUNTIME_FILE}",
    wildcard_constraints:
        run=CLASSIC_RUN_REGEX,
        moving=FIGURE_MOVING_REGEX,
        fixed=FIGURE_FIXED_REGEX,


ruleorder: register_figure_pair > register


for dataset in DATASETS:
    for learned in (True, False):

        rule:
            name:
                f"register_{'learned' if learned else 'run'}_{dataset}"
            input:
                unpack(run_inputs(dataset)),
            output:
                fields=[
                    field_output(
                        f"{pair_dir(dataset, '{experiment}', '{run}', *pair)}/{FIELD_FILE}",
                        keeps_volumes(dataset, *pair),
                    )
                    for pair in test_pairs(dataset)
                ],
                runtimes=[
                    f"{pair_dir(dataset, '{experiment}', '{run}', *pair)}/{RUNTIME_FILE}"
                    for pair in test_pairs(dataset)
                ],
            wildcard_constraints:
                run=LEARNED_RUN_REGEX if learned else PER_RUN_REGEX,
            params:
                method=lambda wildcards: run_of(wildcards).method,
                data=lambda wildcards, input: os.path.dirname(input.data),
                out_root=lambda wildcards, output: run_folder(output.runtimes[0]),
                checkpoint=checkpoint_arg,
                args=lambda wildcards: register_args(run_of(wildcards)),
            threads: REGISTER["threads"]
            resources:
                gpu=REGISTER_GPUS if learned else 0,
                runtime=scaled(REGISTER["runtime"]),
                mem_mb=scaled(REGISTER["mem_mb"]),
            log:
                f"logs/{dataset}/register/{{experiment}}/{{run}}.log",
            benchmark:
                f"logs/benchmarks/{dataset}/register/{{experiment}}/{{run}}.tsv"
            conda:
                "../envs/regbench.yaml"
            shell:
                "regbench register-pairs {params.method} --data {params.data} --test-pairs "
                "--out-root {params.out_root:q} --replace-stale {params.checkpoint} {params.args} "
                "> {log} 2>&1"


for dataset in DATASETS:

    rule:
        name:
            f"evaluate_{dataset}"
        input:
            data=manifest(dataset),
            fields=[
                f"{pair_dir(dataset, '{experiment}', '{run}', *pair)}/{FIELD_FILE}"
                for pair in test_pairs(dataset)
            ],
            runtimes=[
                f"{pair_dir(dataset, '{experiment}', '{run}', *pair)}/{RUNTIME_FILE}"
                for pair in test_pairs(dataset)
            ],
        output:
            [
                f"{pair_dir(dataset, '{experiment}', '{run}', *pair)}/{METRICS_FILE}"
                for pair in test_pairs(dataset)
            ],
        params:
            data=lambda wildcards, input: os.path.dirname(input.data),
            out_root=lambda wildcards, input: run_folder(input.runtimes[0]),
            volumes=volume_args(dataset),
        threads: 1
        resources:
            runtime=scaled(config["evaluate"]["runtime"]),
            mem_mb=scaled(config["evaluate"]["mem_mb"]),
        log:
            f"logs/{dataset}/evaluate/{{experiment}}/{{run}}.log",
        benchmark:
            f"logs/benchmarks/{dataset}/evaluate/{{experiment}}/{{run}}.tsv"
        conda:
            "../envs/regbench.yaml"
        shell:
            "regbench evaluate-pairs --data {params.data} --out-root {params.out_root} "
            "--test-pairs {params.volumes} --threads {threads} > {log} 2>&1"
