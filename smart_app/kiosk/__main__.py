"""``python -m smart_app.kiosk``: make the tablet's "Listen" audio (smart_app/kiosk/audio.py; run by ``make audio``)."""

from smart_app.kiosk.audio import main

raise SystemExit(main())
