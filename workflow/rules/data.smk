# Stage 1: prepared datasets under data/{dataset}/ (images/, labels/, dataset.json).
# dataset.json is written last by every preparer, so it stands for the whole folder.


rule demo_data:
    output:
        "data/demo/dataset.json",
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        subjects=config["datasets"].get("demo", {}).get("subjects"),
        scale=config["datasets"].get("demo", {}).get("scale"),
        seed=config["datasets"].get("demo", {}).get("seed"),
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
        "data/{dataset}/dataset.json",
    wildcard_constraints:
        dataset="lpba40|mindboggle101",
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        raw=lambda wildcards: raw_dir(wildcards.dataset),
        subjects=prepare_subjects_args,
        # LPBA40 is aligned to MNI152 with ANTs (threaded); Mindboggle101 is only cropped
        ants_threads=lambda wildcards, threads: (
            f"--threads {threads}" if wildcards.dataset == "lpba40" else ""
        ),
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
        "{params.subjects} {params.ants_threads} > {log} 2>&1"


rule download_mindboggle101:
    output:
        touch(f"{DOWNLOAD_DIR}/{DOWNLOAD_MARKER}"),
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        source=download_source_args,
    log:
        "logs/mindboggle101/download.log",
    benchmark:
        "logs/benchmarks/mindboggle101/download.tsv"
    conda:
        "../envs/regbench.yaml"
    shell:
        "regbench download mindboggle101 --out {params.out:q} {params.source} > {log} 2>&1"
