"""The integrated-gradients kernels behind `kn.attribute`.

fast path (`fast`): `clean` (one clean run per answer token, its key/value cache: `kvcache`),
`plan` (which path rows go in which pass), `joins` (the hooks that put the rows into the model:
joining after their block, or replaced inside it; the post-FFN norm freeze: `norm`), `head` (the
output layer's dP(gold)/dh in vocabulary chunks; `walks`: one such walk shared by several passes).
`reference`: the plain definition, an oracle that shares only `kn.hooks` and `kn.arch` (through `LM`)
with the fast path.
"""
