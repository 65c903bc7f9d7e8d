"""The standard decoder described from its structure: layer stack, MLP and norms
(:mod:`.structure`), attention blocks (:mod:`.attention_layout`), what both find as data
(:mod:`.layout`), mixture-of-experts blocks it refuses (:mod:`.experts`), the post-norm probe
(:mod:`.probe`) and the fused-row probe (:mod:`.rows_probe`), the tie description
(:mod:`.describe`), config sizes (:mod:`.sizes`), scaled embeddings
(:mod:`.scaled_embedding`) and the family object (:mod:`.family`)."""
