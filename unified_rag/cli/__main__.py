"""`python -m unified_rag.cli ...` (what `accelerate launch` and `torchrun` start)."""
from unified_rag.cli import app

app()
