"""kernels room."""
