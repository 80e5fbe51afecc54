"""The model and the folder a trained one lives in.

    lstm      LSTMLM: embedding -> LSTM -> full | tied | adaptive output
    run_dir   the run directory: its files, loading a trained run
"""
