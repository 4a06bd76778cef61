"""From an adapted model to what people use: `predict` (segment new scans in their own
grid, from a run's workdir) and `status` (where a run stands, who waits for annotators).

Both sit above the loop's rooms: they read a workdir and build a run's parts through
`components`; nothing below them imports this package. The files they and the manifest
oracle write for viewers are `assft_jax.viewer`'s.
"""
