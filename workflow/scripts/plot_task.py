from tlm.evaluate import summary_table
from tlm.report import plot_quality_vs_flops, plot_runs, plot_training_curves, run_curves
from tlm.smk import run


def main(smk):
    task = smk.wildcards.task
    _, summary = summary_table(smk.input.metrics)  # the task's rows of results/summary.csv
    curves = run_curves(smk.input.stages)
    plot_quality_vs_flops(curves, summary, task, smk.output.quality)
    plot_training_curves(curves, task, smk.output.curves)
    plot_runs(summary, task, smk.output.runs)


run(main, snakemake)  # noqa: F821
