"""regbench workflow: prepare -> train -> register -> evaluate -> aggregate -> tables, figures.

    snakemake --cores 2                                   # the embedded demo (config.yaml)
    snakemake --configfile config/paper.yaml --profile workflow/profiles/slurm
    snakemake --report report.html                        # figures and tables in one page

The configuration is checked against workflow/schemas/config.schema.yaml. Rules live in
workflow/rules/ by stage; an external (non-Python) method is a rule file named by its
`rule_file` in the configuration (workflow/rules/methods/example_external.smk shows how).
Building the DAG imports only pure-Python parts of regbench, from this checkout, so Snakemake's
own environment needs no more than Snakemake (workflow/rules/common.smk).
"""

import os

from snakemake.utils import min_version, validate

min_version("9.0")

# The checkout the per-rule conda environment installs (workflow/envs/regbench.post-deploy.sh).
os.environ.update(REGBENCH_SOURCE=workflow.basedir)


# The demo unless a --configfile is given: a given file replaces config.yaml instead of being
# merged into it (the paper's configuration must not run the demo too).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"



validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset=DATASET_REGEX,
    experiment="[A-Za-z0-9_]+",
    moving="[A-Za-z0-9._-]+",
    fixed="[A-Za-z0-9._-]+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


for rule_file in EXTERNAL_RULE_FILES:

    include: rule_file


# On a cluster these run where Snakemake runs: they are light (and so do the downloads, marked
# `localrule` in workflow/rules/data.smk: they need the network).
localrules:
    all,
    aggregate,
    tables_main,
    tables_experiment,
    figures,
    figure_warped,


rule all:
    input:
        all_targets(),
    default_target: True
