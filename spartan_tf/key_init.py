"""``--key-init data``: each memory's keys start from k-means of the queries it will see.

Random keys (std 0.02) route every token almost alike at first, so the routing must sort itself
out while the values learn. Here, before training, the task model runs once over a sample of its
training texts; every memory records its queries (``SparseMemory.query``, real tokens only), and then:

    d = q - mean(q)                 the direction common to all tokens taken out
    parents:  k-means of d into E clusters (centroids c_e);  parent key e   ~ unit(c_e)
    children: k-means of parent e's tokens into C clusters (c_ec);  child key ec ~ unit(c_ec - c_e)

each direction also made orthogonal to mean(q), so that no key favours every token alike, and the
keys scaled so that the logits over the sample have a standard deviation of ``LOGIT_STD`` (the child
logits after the temperature): the spread that random keys give a layer-normed query (0.02 x
sqrt(384) ~ 0.4), so only where tokens go changes, not how sharply. The values keep their random
start (the memory still starts near the identity), which is why one pass with every memory recording
sees what each memory will see when training starts.
"""

import contextlib
import time

import numpy as np

from spartan_tf import data
from spartan_tf.errors import SpartanError
from spartan_tf.memory import SparseMemory

LOGIT_STD = 0.4
SAMPLE_TEXTS = 64  # training texts run through the model (a few thousand tokens: enough for E * C clusters)
MAX_TOKENS = 8192  # queries per memory given to k-means (a seeded sample of the texts' tokens)
BATCH_SIZE = 32


def memories_of(model) -> list:
    """Every SparseMemory of a TaskModel, bottom layer first (both of a layer with two)."""
    found = []
    for module in model.after_layers:
        if isinstance(module, SparseMemory):
            found.append(module)
        elif module is not None:
            found.extend(module.memories.values())  # SublayerMemories
    return found


@contextlib.contextmanager
def recording_queries(memories):
    """While open, every (eager) call of a memory appends its query [B, S, H] to ``records[i]``."""
    records = [[] for _ in memories]
    for memory, record in zip(memories, records):
        def recording(hidden, original=memory.query, record=record):
            query = original(hidden)
            record.append(query.numpy())
            return query
        memory.query = recording  # shadows the method on this instance only
    try:
        yield records
    finally:
        for memory in memories:
            del memory.query


def unit_orthogonal(vectors, direction):
    """Rows of ``vectors`` [N, H] less their component along ``direction`` [H], scaled to norm 1."""
    direction = direction / np.linalg.norm(direction)
    vectors = vectors - np.outer(vectors @ direction, direction)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def kmeans_keys(queries, num_parents: int, children: int, temperature: float, seed: int):
    """(parent keys [E, H], child keys [E, C, H]) float32 from one memory's queries [N, H] (see above)."""
    from sklearn.cluster import KMeans  # imported here: a run without --key-init data never pays for it

    mean = queries.mean(axis=0)
    centered = queries - mean
    parents = KMeans(num_parents, n_init=1, random_state=seed).fit(centered)
    parent_directions = unit_orthogonal(parents.cluster_centers_, mean)
    parent_scale = LOGIT_STD / float(np.std(centered @ parent_directions.T))
    child_keys = np.empty((num_parents, children, queries.shape[1]), dtype=np.float32)
    member_logits = []
    for parent, centroid in enumerate(parents.cluster_centers_):
        members = centered[parents.labels_ == parent]
        if len(members) >= children:
            child_centroids = KMeans(children, n_init=1, random_state=seed + parent).fit(members).cluster_centers_
        else:  # too few tokens to split: children at random around the parent's centroid
            child_centroids = centroid + np.random.default_rng(seed + parent).normal(size=(children, len(centroid)))
        child_directions = unit_orthogonal(child_centroids - centroid, mean)
        child_keys[parent] = child_directions
        member_logits.append(members @ child_directions.T)
    child_scale = LOGIT_STD * temperature / float(np.std(np.concatenate(member_logits)))
    return (parent_scale * parent_directions).astype(np.float32), (child_scale * child_keys).astype(np.float32)


def initialize_keys(model, task, encoded: dict, seed: int) -> float:
    """Set every memory's keys of ``model`` (a built TaskModel for ``task``) from its queries over a
    seeded sample of ``encoded`` (data.encode's tokenized training texts). Returns the seconds it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    count = len(encoded["input_ids"])
    rows = rng.choice(count, size=min(SAMPLE_TEXTS, count), replace=False)
    sample = {name: [values[row] for row in rows] for name, values in encoded.items()}
    # batches of like lengths: little padding
    batches = data.make_dataset(sample, [0] * len(rows), BATCH_SIZE, shuffle=False, seed=0, task=task,
                                order_by_length=True)
    memories = memories_of(model)
    masks = []
    with recording_queries(memories) as records:
        for batch, _ in batches:
            model.encode(batch, training=False)
            masks.append(batch["attention_mask"].numpy().astype(bool))
    for index, (memory, record) in enumerate(zip(memories, records)):
        queries = np.concatenate([query[mask] for query, mask in zip(record, masks)])  # real tokens [N, H]
        if len(queries) < memory.num_parents:
            raise SpartanError(f"--key-init data: the {len(rows)} training texts hold {len(queries)} tokens, fewer "
                               f"than the {memory.num_parents} parents to cluster them into; use --key-init random")
        if len(queries) > MAX_TOKENS:
            queries = queries[rng.choice(len(queries), size=MAX_TOKENS, replace=False)]
        parent_keys, child_keys = kmeans_keys(queries, memory.num_parents, memory.children_per_parent,
                                              memory.temperature, seed + index)
        memory.parent_keys.assign(parent_keys)
        memory.child_keys.assign(child_keys)
    return time.perf_counter() - start
