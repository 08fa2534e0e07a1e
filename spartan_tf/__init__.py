"""spartan-tf: SPARTAN sparse memories over a frozen BERT, trained in TensorFlow, deployed as TFLite.

transformers' TensorFlow models need Keras 2 (the ``tf_keras`` package). ``TF_USE_LEGACY_KERAS``
must be set before TensorFlow is first imported, so it is set here, on package import.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
