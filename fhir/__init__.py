"""Our FHIR layer, sharing the ``fhir`` name with ``fhir.resources``.

``fhir.resources`` ships ``fhir/__init__.py`` as a regular package. Making ours
extend the package path lets ``fhir.resources`` and our ``fhir.*`` modules import
side by side whichever of the two ``fhir`` directories Python finds first
(repo root on sys.path, editable install, or a wheel installed into the same
site-packages ``fhir/`` directory).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
