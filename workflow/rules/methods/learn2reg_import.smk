# Any Learn2Reg entry as a method, by this one rule file: a folder of Learn2Reg displacement
# fields (disp_<fixed>_<moving>.nii.gz or .npz, (X, Y, Z, 3) voxels on the fixed grid, pulling
# the moving image; regbench/learn2reg.py) becomes a run of the suite, scored like every other.
#
#   methods:
#     my-entry:
#       rule_file: workflow/rules/methods/learn2reg_import.smk
#       label: My Learn2Reg entry
#       options: {learn2reg_folder: path/to/folder}   # relative to the working directory
#   experiments:
#     main:
#       methods: [identity, affine, syn, voxelmorph, dualprnet, my-entry]
#
# Several methods may name this file: each gets its own folder and run. One job per dataset,
# experiment and method writes the field.nii.gz and runtime.json of every test pair
# (`regbench learn2reg-import`, which checks every file before it writes any); the workflow's
# `evaluate_{dataset}` rule then scores them. The files hold no times: the time column is empty.
# `regbench learn2reg-export RUN_FOLDER --data DATA --test-pairs --out FOLDER` goes the other
# way, e.g. to submit the suite's fields to Learn2Reg's own evaluation.

LEARN2REG_METHODS = [
    name
    for name in EXTERNAL
    if os.path.basename(METHODS[name]["rule_file"]) == "learn2reg_import.smk"
]


def learn2reg_folder(wildcards):
    folder = METHODS[wildcards.entry].get("options", {}).get("learn2reg_folder")
    if not folder:
        raise WorkflowError(
            f"config: method {wildcards.entry!r} needs options: {{learn2reg_folder: FOLDER}}"
        )
    return folder


for dataset in DATASETS:

    rule:
        name:
            f"learn2reg_import_{dataset}"
        input:
            data=manifest(dataset),
            folder=learn2reg_folder,
        output:
            fields=[
                field_output(
                    f"{pair_dir(dataset, '{experiment}', '{entry}', *pair)}/{FIELD_FILE}",
                    keeps_volumes(dataset, *pair),
                )
                for pair in test_pairs(dataset)
            ],
            runtimes=[
                f"{pair_dir(dataset, '{experiment}', '{entry}', *pair)}/{RUNTIME_FILE}"
                for pair in test_pairs(dataset)
            ],
        wildcard_constraints:
            entry=_alternatives(LEARN2REG_METHODS),
        params:
            data=lambda wildcards, input: os.path.dirname(input.data),
            out_root=lambda wildcards, output: run_folder(output.runtimes[0]),
            label=lambda wildcards: METHODS[wildcards.entry].get("label", wildcards.entry),
        threads: 1
        log:
            f"logs/{dataset}/learn2reg-import/{{experiment}}/{{entry}}.log",
        benchmark:
            f"logs/benchmarks/{dataset}/learn2reg-import/{{experiment}}/{{entry}}.tsv"
        conda:
            "../../envs/regbench.yaml"
        shell:
            "regbench learn2reg-import {input.folder:q} --data {params.data} --test-pairs "
            "--out-root {params.out_root} --method {wildcards.entry} --label {params.label:q} "
            "--replace-stale > {log} 2>&1"
