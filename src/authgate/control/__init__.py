"""The control plane: admin API on uvicorn + Starlette, on its own (loopback) port."""
