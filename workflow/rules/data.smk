# Stage 1: prepared datasets under data/{dataset}/ (images/, labels/, dataset.json).
# dataset.json is written last by every preparer, so it stands for the whole folder.


rule demo_data:
    output:
        manifest("demo"),
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        subjects=dataset_settings("demo").get("subjects"),
        scale=dataset_settings("demo").get("scale"),
        seed=dataset_settings("demo").get("seed"),
        test_subjects=demo_test_subjects_arg(),
    log:
        "logs/demo/demo_data.log",
    benchmark:
        "logs/benchmarks/demo/demo_data.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench demo-data --out {params.out} --subjects {params.subjects} "
        "--scale {params.scale} --seed {params.seed} {params.test_subjects} > {log} 2>&1"


rule prepare:
    input:
        unpack(prepare_input),
    output:
        manifest("{dataset}"),
    wildcard_constraints:
        dataset=PREPARED_REGEX,
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        raw=lambda wildcards: raw_dir(wildcards.dataset),
        subjects=prepare_subjects_args,
        # LPBA40 is aligned to MNI152 with ANTs (threaded); Mindboggle101 is only cropped
        threads=prepare_threads_arg,
    threads: 4
    resources:
        # LPBA40: 40 affine registrations at 1 mm
        runtime=scaled(120),
        mem_mb=scaled(8000),
    log:
        "logs/{dataset}/prepare.log",
    benchmark:
        "logs/benchmarks/{dataset}/prepare.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench prepare {wildcards.dataset} --raw {params.raw:q} --out {params.out} "
        "{params.subjects} {params.threads} > {log} 2>&1"


for dataset in DOWNLOADED:

    rule:
        name:
            f"download_{dataset}"
        output:
            touch(download_marker(dataset)),
        params:
            out=lambda wildcards, output: os.path.dirname(output[0]),
            source=download_source_args(dataset),
        localrule: True
        log:
            f"logs/{dataset}/download.log",
        benchmark:
            f"logs/benchmarks/{dataset}/download.tsv"
        conda:
            "../envs/regbench.yaml"
        shell:
            f"regbench download {dataset} --out {{params.out:q}} {{params.source}} > {{log}} 2>&1"
