"""Side-by-side comparison of MatSlice variants in a Gradio app (`matslice demo`); see demo/app.py."""
