import os
import warnings

# The suite never renders; without this, MuJoCo's GLFW backend warns on every headless machine.
os.environ.setdefault('MUJOCO_GL', 'disable')
# OGBench declares float64 bounds for float32 spaces; gymnasium warns about it on every env made.
warnings.filterwarnings('ignore', message=r'.*Box (low|high)\'s precision lowered', category=UserWarning)
