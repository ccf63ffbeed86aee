"""Training-data factory: procedural Cycles scenes rendered with pip bpy, packed into fp16 patch shards.

Modules importing bpy (``render``, ``bpy_scene``, ``bpy_materials``, ``blender_compat``) run only inside
render subprocesses; everything else here is plain numpy/OpenEXR and may be imported anywhere.
"""
