"""KORR: Koopman-guided online residual refinement of a frozen action-chunked base policy."""
