# motifpipe: Motif Mimicry experiments.
#   snakemake --cores N [--configfile config/studies/<study>.yaml]
# Stages: init_tracking -> generate -> fit_baseline -> transfer -> train -> evaluate -> report


# The default study, unless --configfile names another (config files given on the
# command line would otherwise be merged key by key into this one).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/pipeline.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        f"{RESULTS}/summary.csv",
        f"{REPORTS}/report.html",
