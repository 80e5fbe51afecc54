"""Text: files on disk -> clean documents -> training, validation and test text -> tokens -> ids.

    reading    files, folders and inf.txt index files -> documents
    encodings  which encoding a file is in (UTF-8, GB18030, Big5, UTF-16)
    cleaning   line ends, indentation, blank lines, advert and navigation lines
    splitting  the held-out end of every document, or held-out files
    overlap    held-out text that the training text also has, word for word
    tokenizers char | word (jieba) | hybrid | whitespace; segmenter: jieba's words, fast
    vocab      ids from the training split only
"""
