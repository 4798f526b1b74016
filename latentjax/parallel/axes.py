"""Names of mesh axes and of the logical axes that parameters and activations carry.

Models annotate every parameter dimension with one of the logical names below; a rules table
(``configs/...: config.mesh.rules``) maps logical names to mesh axes. Keeping the names in one
module means a rules table can be checked against them.
"""

# Mesh axes, outermost first: pure data parallelism, fully sharded data parallelism (parameters
# and optimiser state sharded, gathered per layer), tensor (model) parallelism.
DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

# Logical axes.
BATCH = "batch"  # examples in a batch (activations)
EMBED = "embed"  # transformer width
MLP = "mlp"  # transformer MLP hidden width
HEADS = "heads"  # attention heads x head dim, flattened
VOCAB = "vocab"  # rows of an embedding table (classes)
CONV_IN = "conv_in"  # input channels of a convolution kernel
CONV_OUT = "conv_out"  # output channels of a convolution kernel (and its bias)
NORM = "norm"  # scale/bias of a normalisation layer
HEIGHT = "height"  # rows of a video autoencoder's activations (spatial sharding of large frames)

LOGICAL_AXES = (BATCH, EMBED, MLP, HEADS, VOCAB, CONV_IN, CONV_OUT, NORM, HEIGHT)
