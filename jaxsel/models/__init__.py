"""The networks jaxsel trains or embeds with: BERT (MiniLM), Llama-family decoders (SmolLM2), the
classifiers built on them, and tokenization."""
