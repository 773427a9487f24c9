"""EHR simulator page of the sandbox: pick a clinician, patient and encounter, then launch the app.

``GET /ehr`` the chooser; ``POST /ehr/launch`` stores a SMART launch context and sends the browser to
``APP_LAUNCH_URL?iss=<base>/fhir&launch=<id>`` (top level) or to ``/ehr/frame/<launch>``, an EHR-like
page that opens the app in an iframe, as many EHRs embed SMART apps. ``GET /`` redirects to ``/ehr``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for

from sandbox_ehr import authstore
from sandbox_ehr.issuers import app_standalone_url
from sandbox_ehr.issuers import enabled as per_launch_iss_enabled

bp = Blueprint("ehr_ui", __name__)

SOCIAL_WORKER = "106328005"  # SNOMED CT "Social worker" (PractitionerRole.code)
PROGRAM_MANAGER = "DVPM"  # the sandbox's local position code (urn:ipv-sandbox:position) for a program manager


# --- reading the store (shared with the standalone login page in auth.py) ----------------------

def _store():
    return current_app.extensions.get("sandbox_store")


def _search(resource_type: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    store = _store()
    if store is None:
        return []
    return store.search(resource_type, params or {})


def human_name(resource: dict[str, Any]) -> str:
    for name in resource.get("name") or []:
        if name.get("use") == "old":
            continue
        if name.get("text"):
            return name["text"]
        parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family") or ""]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return resource.get("id", "")


def resource_exists(resource_type: str, resource_id: str) -> bool:
    store = _store()
    return bool(store is not None and resource_id and store.exists(resource_type, resource_id))


def list_practitioners() -> list[dict[str, str]]:
    """[{id, label}] with the role (clinician, social worker or program manager) in the label, sorted by name."""
    kinds: dict[str, str] = {}
    for role in _search("PractitionerRole"):
        codes = {c.get("code") for cc in role.get("code") or [] for c in cc.get("coding") or []}
        who = (role.get("practitioner") or {}).get("reference", "").split("/")[-1]
        if SOCIAL_WORKER in codes:
            kinds[who] = "Social worker"
        elif PROGRAM_MANAGER in codes:
            kinds.setdefault(who, "Program manager")
    out = []
    for prac in _search("Practitioner"):
        out.append({"id": prac["id"], "label": f"{human_name(prac)} ({kinds.get(prac['id'], 'Clinician')})"})
    return sorted(out, key=lambda p: p["label"])


def list_patients() -> list[dict[str, str]]:
    out = []
    for patient in _search("Patient"):
        birth = patient.get("birthDate")
        out.append({"id": patient["id"], "label": human_name(patient) + (f", born {birth}" if birth else "")})
    return sorted(out, key=lambda p: p["label"])


def list_portal_users() -> list[dict[str, str]]:
    """[{id, label}] of who may sign in to the patient portal: each patient (``Patient/<id>``) and each active proxy
    linked to one (``RelatedPerson/<id>``)."""
    names = {p["id"]: human_name(p) for p in _search("Patient")}
    out = [{"id": f"Patient/{pid}", "label": f"{name} (patient)"} for pid, name in names.items()]
    for person in _search("RelatedPerson"):
        patient = portal_patient_of(f"RelatedPerson/{person['id']}")
        if patient in names:
            out.append({"id": f"RelatedPerson/{person['id']}",
                        "label": f"{human_name(person)} (proxy for {names[patient]})"})
    return sorted(out, key=lambda p: p["label"])


def portal_patient_of(user: str) -> str | None:
    """The patient a portal user reads: the patient themself, or the one an active RelatedPerson is linked to."""
    kind, _, rid = (user or "").partition("/")
    if kind == "Patient" and resource_exists("Patient", rid):
        return rid
    if kind != "RelatedPerson" or not resource_exists("RelatedPerson", rid):
        return None
    person = _store().read("RelatedPerson", rid)
    ref = (person.get("patient") or {}).get("reference") or ""
    if person.get("active") is False or not ref.startswith("Patient/"):
        return None
    return ref.split("/", 1)[1]


def list_encounters() -> list[dict[str, str]]:
    """[{id, patient, label}] for every encounter; the page shows those of the chosen patient."""
    locations = {loc["id"]: loc.get("name", loc["id"]) for loc in _search("Location")}
    out = []
    for enc in _search("Encounter"):
        patient = (enc.get("subject") or {}).get("reference", "")
        if not patient.startswith("Patient/"):
            continue
        start = ((enc.get("period") or {}).get("start") or "")[:10]
        cls = (enc.get("class") or {})
        where = ""
        for loc in enc.get("location") or []:
            ref = (loc.get("location") or {}).get("reference", "")
            where = locations.get(ref.split("/")[-1]) or (loc.get("location") or {}).get("display") or ""
            if where:
                break
        kind = cls.get("display") or cls.get("code") or ""
        label = " · ".join(p for p in (start, kind, where, enc.get("status")) if p)
        out.append({"id": enc["id"], "patient": patient.split("/", 1)[1], "label": label or enc["id"]})
    return sorted(out, key=lambda e: e["label"], reverse=True)


def _encounter_patient(encounter_id: str) -> str | None:
    store = _store()
    if store is None or not store.exists("Encounter", encounter_id):
        return None
    ref = (store.read("Encounter", encounter_id).get("subject") or {}).get("reference", "")
    return ref.split("/", 1)[1] if ref.startswith("Patient/") else None


# --- pages -------------------------------------------------------------------------------------

def app_launch_url(launch_id: str) -> str:
    from sandbox_ehr.auth import issuer

    target = current_app.config["APP_LAUNCH_URL"]
    sep = "&" if urlsplit(target).query else "?"
    return f"{target}{sep}{urlencode({'iss': issuer(), 'launch': launch_id})}"


@bp.get("/")
def root() -> Response:
    return redirect(url_for("ehr_ui.ehr"))


@bp.get("/ehr")
def ehr():
    return _render_ehr()


def _render_ehr(error: str | None = None, form: dict[str, Any] | None = None, status: int = 200):
    patients = list_patients()
    form = form or {}
    selected_patient = form.get("patient") or request.args.get("patient") or (patients[0]["id"] if patients else "")
    return render_template(
        "ehr.html", practitioners=list_practitioners(), patients=patients, encounters=list_encounters(),
        selected_patient=selected_patient, form=form, error=error,
        app_launch_url=current_app.config["APP_LAUNCH_URL"],
        cds_enabled=bool(current_app.config.get("CDS_SERVICES_URL")),
        app_standalone_url=app_standalone_url(), per_launch_iss=per_launch_iss_enabled(),
        personality=current_app.extensions["sandbox_personality"],
    ), status


@bp.post("/ehr/launch")
def launch() -> Response:
    form = request.form
    practitioner = form.get("practitioner", "")
    patient = form.get("patient", "")
    encounter = form.get("encounter") or None
    values = {"practitioner": practitioner, "patient": patient, "encounter": encounter or "",
              "need_patient_banner": bool(form.get("need_patient_banner")), "iframe": bool(form.get("iframe")),
              "new_window": bool(form.get("new_window"))}
    if not resource_exists("Practitioner", practitioner):
        return _render_ehr("Choose the clinician who is launching the app.", values, 400)
    if not resource_exists("Patient", patient):
        return _render_ehr("Choose a patient.", values, 400)
    if encounter and _encounter_patient(encounter) != patient:
        return _render_ehr("That encounter belongs to another patient. Choose one of this patient's encounters.",
                           values, 400)
    from sandbox_ehr.auth import default_style_url

    launch_id = authstore.create_launch({
        "practitioner": practitioner, "patient": patient, "encounter": encounter,
        "intent": form.get("intent") or None,
        "need_patient_banner": values["need_patient_banner"],
        "smart_style_url": default_style_url(),
        "fhirContext": [{"reference": f"Encounter/{encounter}"}] if encounter else [],
    })
    if values["iframe"]:
        return redirect(url_for("ehr_ui.frame", launch_id=launch_id), code=303)
    return redirect(app_launch_url(launch_id), code=303)


@bp.get("/ehr/frame/<launch_id>")
def frame(launch_id: str):
    context = authstore.get_launch(launch_id)
    if context is None:
        abort(404)
    store = _store()
    patient = store.read("Patient", context["patient"]) if store and context.get("patient") else {}
    practitioner = store.read("Practitioner", context["practitioner"]) if store and context.get("practitioner") \
        else {}
    return render_template("ehr_frame.html", app_url=app_launch_url(launch_id),
                           personality_title=current_app.extensions["sandbox_personality"].title,
                           patient_name=human_name(patient) if patient else "",
                           birth_date=patient.get("birthDate", ""),
                           user_name=human_name(practitioner) if practitioner else "")
