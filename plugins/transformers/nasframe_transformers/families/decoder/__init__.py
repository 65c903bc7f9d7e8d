"""The standard decoder described from its structure: layer stack, attention, MLP, norms
(:mod:`.structure`), the post-norm probe (:mod:`.probe`), the tie description
(:mod:`.describe`), config sizes (:mod:`.sizes`), scaled embeddings
(:mod:`.scaled_embedding`) and the family object (:mod:`.family`)."""
