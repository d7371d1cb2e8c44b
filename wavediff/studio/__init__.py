"""`wavediff studio`: a local web page (and JSON API) to audition, regenerate and download loops.

A standard-library HTTP server (server.py) over one worker thread that owns the model (jobs.py)
and a capped folder of every loop made (history.py); the page is one static file (page.html).
"""
