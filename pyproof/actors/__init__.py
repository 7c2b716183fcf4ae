"""Thespian actors, one module per role: root/sessions/session supervisors,
gateway, master and worker. Actors are thin shells; the logic they carry out
lives in pure cores (packetizer/, supervision/) and in the data planes
(master_plane.py, worker_loop.py) that run on nng sockets off the actor thread.
"""
