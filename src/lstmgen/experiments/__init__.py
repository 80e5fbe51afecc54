"""Experiments: runs side by side.

    sweep, sweep_plan, sweep_results  one run per combination of settings -> results.csv, curves.csv
    report, plots                     the report and its plots
    compare                           finished runs side by side, from their folders
"""
