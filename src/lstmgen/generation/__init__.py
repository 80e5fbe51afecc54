"""Generation: writing text with a trained model.

    generate        prompts, rows, stopping, acrostics, streaming
    sampling        the next token: temperature, top-k, top-p, repetition penalties
    cpu_step        the model's step on a CPU, one token per row, in fp32 or int8
    sample_quality  how repetitive samples are, and what they copy from the training text
"""
