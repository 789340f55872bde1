"""Side-by-side comparison of MatSlice variants in a Gradio app (`python -m demo`); see demo/app.py."""
