"""CLI verbs, one module each (`generate_ray` and `train_feedback` are the --ray and kto/dpo
halves of `generate` and `train`): each parses its flags into one options value (`options`,
torch-free) and passes it on; `common` holds the error boundary and the shared flags.
`pahi_rt.cli` registers the verbs (verbs never import it)."""
