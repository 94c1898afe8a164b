"""Builders of OSM-shaped messages and records, following what OSM v19's code writes.

Ids and names are those of the real osmclient ↔ NBI exchanges in ../shared/osm-samples/nbi-http
(``message-flow.ns-create*.md``: project, NSD, VIM account, NS and nslcmop ids); the document layouts follow
NBI ``osm_nbi/instance_topics.py`` ``NsLcmOpTopic._create_nslcmop`` / ``NsLcmOpTopic.new`` /
``BaseTopic.format_on_new`` and LCM ``osm_lcm/ns.py`` (github.com/seltonlucas/osm-capk @35936ae0).
"""

from __future__ import annotations

import copy
import json
from typing import Any

PROJECT = "fada443a-905c-4241-8a33-4dcdbdac55e7"  # nbi-http: the admin project
NSD_ID = "aba58e40-d65f-4f4e-be0a-e248c14d3e03"  # nbi-http: openldap_ns
VIM = "4a4425f7-3e72-4d45-a4ec-4241186f3547"  # nbi-http: mylocation1
VIM2 = "05357241-1a01-416f-9e02-af20f65f51cd"
VIM3 = "ea958ba5-4e58-4405-bf42-6e3be15d4c3a"
NSR_ID = "0335c32c-d28c-4d79-9b94-0ffa36326932"  # nbi-http: NS "ldap"
NSLCMOP_ID = "0c5464da-df42-498e-b306-76d470b76a0d"  # nbi-http: its instantiate nslcmop

# nbi-http message-flow.ns-create.md: the body osmclient POSTs to /nslcm/v1/ns_instances_content
NS_CREATE_REQUEST: dict[str, Any] = {
    "nsdId": NSD_ID,
    "nsName": "ldap",
    "nsDescription": "default description",
    "vimAccountId": VIM,
}
# message-flow.ns-create2.md: the same with additionalParamsForVnf for a KNF (no additionalParams of its own)
NS_CREATE2_REQUEST: dict[str, Any] = {
    **NS_CREATE_REQUEST,
    "nsName": "ldap2",
    "additionalParamsForVnf": [
        {
            "member-vnf-index": "openldap",
            "additionalParamsForKdu": [{"kdu_name": "ldap", "additionalParams": {"replicaCount": "2"}}],
        }
    ],
}


def nslcmop(
    operation: str = "instantiate",
    request: dict[str, Any] | None = None,
    *,
    nslcmop_id: str = NSLCMOP_ID,
    nsr_id: str = NSR_ID,
    placement: bool = False,
) -> dict[str, Any]:
    """The ``ns``/<operation> value NBI publishes for ``request`` (the REST body)."""
    params = copy.deepcopy(request if request is not None else NS_CREATE_REQUEST)
    # nbi.py: ns_instances_content / ns_instances/{id}/<op> add these two to the request
    params["lcmOperationType"] = operation
    params["nsInstanceId"] = nsr_id
    # NsLcmOpTopic.new: primitive_params, else additionalParamsForVnf, become JSON text
    if params.get("primitive_params"):
        params["primitive_params"] = json.dumps(params["primitive_params"])
    elif params.get("additionalParamsForVnf"):
        params["additionalParamsForVnf"] = json.dumps(params["additionalParamsForVnf"])
    if placement:  # NsLcmOpTopic._get_enabled_vims: ENABLED VIM accounts the project can read
        params["validVimAccounts"] = [VIM, VIM2, VIM3]
    now = 1631277626.5666356
    return {
        "id": nslcmop_id,
        "_id": nslcmop_id,
        "operationState": "PROCESSING",
        "queuePosition": None,
        "stage": None,
        "errorMessage": None,
        "detailedStatus": None,
        "statusEnteredTime": now,
        "nsInstanceId": nsr_id,
        "lcmOperationType": operation,
        "startTime": now,
        "isAutomaticInvocation": False,
        "operationParams": params,
        "isCancelPending": False,
        "links": {
            "self": "/osm/nslcm/v1/ns_lcm_op_occs/" + nslcmop_id,
            "nsInstance": "/osm/nslcm/v1/ns_instances/" + nsr_id,
        },
        "_admin": {"created": now, "modified": now, "projects_read": [PROJECT], "projects_write": [PROJECT]},
    }


def trusted_request(**additional_ns: Any) -> dict[str, Any]:
    """An instantiation request of the hackfest 3charmed NS with trust parameters and per-VNF VIMs."""
    return {
        **NS_CREATE_REQUEST,
        "nsName": "trusted",
        "vnf": [{"member-vnf-index": "1", "vimAccountId": VIM2}, {"member-vnf-index": "2"}],
        "additionalParamsForNs": dict(additional_ns),
        "additionalParamsForVnf": [
            {"member-vnf-index": "1", "additionalParams": {"touch_filename": "/home/ubuntu/touch-1"}},
            {"member-vnf-index": "2", "additionalParams": {"trust_loa": 5}},
        ],
    }
