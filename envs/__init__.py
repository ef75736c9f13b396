import os

# The suite never renders; without this, MuJoCo's GLFW backend warns on every headless machine.
os.environ.setdefault('MUJOCO_GL', 'disable')
