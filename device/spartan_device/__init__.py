"""spartan-tf's device client: runs a converted bundle with a TFLite interpreter, numpy and tokenizers.

Standalone on purpose: nothing here imports spartan_tf, TensorFlow (unless chosen as the runtime)
or transformers. The bundle layout is docs/bundle-format.md.
"""

__version__ = "0.1.0"
