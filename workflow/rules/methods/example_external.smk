# An external (non-Python) method, as a rule: the worked example of "adding a method as a rule".
#
# Enable it by naming this file in the configuration and listing the method in an experiment:
#
#   methods:
#     example-identity:
#       rule_file: workflow/rules/methods/example_external.smk
#       label: Identity (external example)
#   experiments:
#     main:
#       methods: [affine, syn, voxelmorph, dualprnet, example-identity]
#
# The rule writes the two standard per-pair files into the run folder of the pair:
#   results/{dataset}/pairs/{experiment}/example-identity/{moving}/{fixed}/field.nii.gz
#   results/{dataset}/pairs/{experiment}/example-identity/{moving}/{fixed}/runtime.json
# and the workflow's `evaluate_{dataset}` rule, which scores every method's pairs, turns them
# into metrics.json with `regbench evaluate-pairs`, so the method then appears in per_pair.csv,
# every table and figure.
# The "tool" here is workflow/scripts/identity_field.py (the identity transform); a real one is
# any command reading the pair's images (data/{dataset}/images/{id}.nii.gz) and writing a field.


EXAMPLE_PAIR = pair_dir("{dataset}", "{experiment}", "example-identity", "{moving}", "{fixed}")
"""The pair's folder; FIELD_FILE and RUNTIME_FILE name its files (workflow/rules/common.smk)."""


rule example_identity:
    input:
        data=manifest("{dataset}"),
    output:
        field=f"{EXAMPLE_PAIR}/{FIELD_FILE}",
        runtime=f"{EXAMPLE_PAIR}/{RUNTIME_FILE}",
    params:
        # A plain path, not workflow.source_path(): that one lies in a per-run cache, and a
        # changed parameter would make Snakemake redo every pair on every run.
        tool=os.path.normpath(
            os.path.join(workflow.current_basedir, "..", "..", "scripts", "identity_field.py")
        ),
        fixed_image=lambda wildcards, input: os.path.join(
            os.path.dirname(input.data), "images", f"{wildcards.fixed}.nii.gz"
        ),
        label=config["methods"]["example-identity"].get("label", "example-identity"),
    threads: 1
    log:
        "logs/{dataset}/example-identity/{experiment}/{moving}/{fixed}.log",
    benchmark:
        "logs/benchmarks/{dataset}/example-identity/{experiment}/{moving}/{fixed}.tsv"
    conda:
        "../../envs/regbench.yaml"
    shell:
        "python {params.tool:q} {params.fixed_image:q} {output.field:q} {output.runtime:q} "
        "--method example-identity --label {params.label:q} > {log} 2>&1"
