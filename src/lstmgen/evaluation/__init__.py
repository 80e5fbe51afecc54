"""Evaluation: how good a model is on text it never saw.

    score     perplexity, bits per character, OOV rate and the open-vocabulary score of a token stream
    evaluate  a trained run scored on its held-out split or on a file, with the checks that it is held out
"""
