"""JUnit XML, the test-report format CI systems display: junit.xml for an audit,
comparison-junit.xml for a compare.

Every gate of every check is one test case (a failed gate is a failed test case carrying its
finding), so a CI's test view lists the audit's gates beside the project's own tests. Test
case names are the gate's subject (and output), never its figures, so a CI tracks the same
test from run to run. Rows with non-finite scores or gradients fail an audit without failing a
gate: they get a test case of their own, and so does each declared proxy's growth limit in a
compare (``compare.max_proxy_share_increase``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from sensaudit.core.text_safety import xml_text
from sensaudit.reports.base import ReportWriter
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult
from sensaudit.results.gate_text import finding_for, gate_line, increase_line, notice_line


@dataclass
class _Case:
    classname: str
    name: str
    failure: str | None = None  # the failure's one-line message
    details: str = ""  # the failure's body: the finding


class JunitReport(ReportWriter):
    format = "junit"

    def audit(self, result: AuditResult) -> None:
        self.out.write_text("junit.xml", junit_xml("sensaudit.audit", audit_cases(result),
                                                   _properties(result), _warnings(result)))

    def comparison(self, result: ComparisonResult) -> None:
        cases = audit_cases(result.new) + _increase_cases(result)
        properties = {"old_model": result.old.model_path, **_properties(result.new)}
        self.out.write_text("comparison-junit.xml",
                            junit_xml("sensaudit.compare", cases, properties,
                                      _warnings(result.new)))


def audit_cases(result: AuditResult) -> list[_Case]:
    multi = len(result.outputs) > 1
    cases = []
    for gate in result.gates.all:
        name = f"{gate.subject} [{gate.output}]" if multi else gate.subject
        case = _Case(classname=f"sensaudit.{gate.check}", name=name)
        if not gate.passed:
            case.failure = gate_line(gate, multi)
            case.details = finding_for(gate, result.checks, multi) or case.failure
        cases.append(case)
    finite = _Case(classname="sensaudit.nonfinite", name="scores and gradients are finite")
    if result.nonfinite_rows and not result.nonfinite_allowed:
        ids = ", ".join(map(str, result.nonfinite_ids))
        finite.failure = f"{result.nonfinite_rows:,} rows gave non-finite scores or gradients"
        finite.details = (f"{finite.failure} (first ids: {ids}); set audit.allow_nonfinite: "
                          "true to accept them")
    cases.append(finite)
    return cases


def _increase_cases(result: ComparisonResult) -> list[_Case]:
    margin = result.settings.get("max_proxy_share_increase")
    if margin is None:
        return []
    multi = len(result.new.outputs) > 1
    grown = {(i.feature, i.output): i for i in result.proxy_increases}
    cases = []
    for output in result.new.outputs:
        for feature in result.new.proxies:
            case = _Case(classname="sensaudit.compare.max_proxy_share_increase",
                         name=f"{feature} [{output}]" if multi else feature)
            increase = grown.get((feature, output))
            if increase is not None:
                case.failure = increase_line(feature, increase.delta_share, margin)
                case.details = case.failure
            cases.append(case)
    return cases


def _properties(result: AuditResult) -> dict[str, str]:
    return {"model": result.model_path, "data": result.data_path, "rows": str(result.rows),
            "passed": str(result.passed).lower()}


def _warnings(result: AuditResult) -> list[str]:
    multi = len(result.outputs) > 1
    return [f"warning: {notice_line(w, multi)}" for w in result.gates.warnings]


def junit_xml(suite: str, cases: list[_Case], properties: dict[str, str],
              notes: list[str]) -> str:
    """One <testsuite> in a <testsuites> root, the layout Jenkins, GitLab, Azure and the
    GitHub junit actions all read."""
    failures = sum(case.failure is not None for case in cases)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0",
              "skipped": "0", "time": "0"}
    root = ET.Element("testsuites", {"name": "sensaudit", **counts})
    node = ET.SubElement(root, "testsuite", {"name": suite, **counts})
    props = ET.SubElement(node, "properties")
    for key, value in properties.items():
        ET.SubElement(props, "property", {"name": key, "value": _text(value)})
    for case in cases:
        element = ET.SubElement(node, "testcase", {"classname": _text(case.classname),
                                                   "name": _text(case.name), "time": "0"})
        if case.failure is not None:
            failure = ET.SubElement(element, "failure", {"message": _text(case.failure),
                                                         "type": "GateFailed"})
            failure.text = _text(case.details)
    if notes:
        ET.SubElement(node, "system-out").text = _text("\n".join(notes))
    ET.indent(root)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + ET.tostring(root, encoding="unicode") + "\n")


def _text(value: str) -> str:
    return xml_text(value)
