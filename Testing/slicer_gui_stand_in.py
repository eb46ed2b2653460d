"""Stand-ins for the parts of the 3D Slicer application that slicer-core lacks — Qt widgets,
the scripted-module base classes, parameterNodeWrapper — just enough to run the ImmunoDiff
module's panel code against a real slicer-core MRML scene. The widgets are built from the real
.ui file (class, name, SlicerParameterName, initial values); parameter nodes store their values
in a real vtkMRMLScriptedModuleNode and fire its ModifiedEvent, as Slicer's wrapper does; GUI
connectors exist only for the widget/type pairs Slicer's parameterNodeWrapper supports, and
connectGui raises for any other pair, as Slicer's does.

    with module_under_test(monkeypatch) as module:   # the ImmunoDiff.py module object
        widget = module.ImmunoDiffWidget(); widget.setup()
"""

from __future__ import annotations

import contextlib
import importlib.util
import pathlib
import sys
import types
import typing
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import slicer

MODULE_FILE = Path(__file__).resolve().parents[1] / "ImmunoDiff" / "ImmunoDiff.py"
UI_FILE = MODULE_FILE.parent / "Resources" / "UI" / "ImmunoDiff.ui"


# --- widgets ------------------------------------------------------------------------------
class Widget:
    """One widget of the .ui: its properties as attributes, signals recorded and emitted."""

    def __init__(self, cls: str, name: str, properties: dict, items: list[str]):
        self.className, self.objectName = cls, name
        self.properties = properties
        self._slots: dict[str, list] = {}
        self.enabled = properties.get("enabled", True)
        self.visible = properties.get("visible", True)
        self.text = properties.get("text", "")
        self.toolTip = properties.get("toolTip", "")
        self.checked = properties.get("checked", False)
        self.minimum = properties.get("minimum", 0)
        self.maximum = properties.get("maximum", 99)
        self.value = properties.get("value", self.minimum)
        self.items = items
        self.currentText = items[0] if items else ""
        self.styleSheet = ""
        self._node = None
        self._segmentId = ""
        self.currentPath = ""
        self.tableNode = None

    # Qt's signal/slot API as the module uses it
    def connect(self, signal: str, slot) -> None:
        self._slots.setdefault(signal.split("(")[0], []).append(slot)

    def emit(self, signal: str, *args) -> None:
        for slot in self._slots.get(signal, []):
            slot(*args[:_positional_count(slot, len(args))])  # as PythonQt: what fits

    def setStyleSheet(self, style: str) -> None:
        self.styleSheet = style

    # user actions (tests)
    def setValue(self, value) -> None:
        self.value = value
        self.emit("valueChanged", value)

    def setCurrentText(self, text: str) -> None:
        assert text in self.items, (self.objectName, text, self.items)
        self.currentText = text
        self.emit("currentIndexChanged", self.items.index(text))

    def clear(self) -> None:
        self.items, self.currentText = [], ""
        self.emit("currentIndexChanged", -1)

    def addItems(self, texts) -> None:
        first = not self.items
        self.items = self.items + list(texts)
        if first and self.items:  # as QComboBox: the first item becomes current
            self.currentText = self.items[0]
            self.emit("currentIndexChanged", 0)

    def setChecked(self, checked: bool) -> None:
        self.checked = checked
        self.emit("toggled", checked)

    def click(self) -> None:
        assert self.enabled, f"{self.objectName} is disabled"
        self.emit("clicked", True)

    # node widgets
    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        self._node = node
        self.emit("currentNodeChanged", node)
        self.emit("markupsNodeChanged")

    def setCurrentSegmentID(self, segment_id: str) -> None:
        self._segmentId = segment_id
        self.emit("currentSegmentChanged", segment_id)

    def setNodeBaseName(self, name: str) -> None:
        self.nodeBaseName = name

    def markupsPlaceWidget(self):
        return types.SimpleNamespace(setPlaceMultipleMarkups=lambda mode: None)

    def setMRMLTableNode(self, node) -> None:
        self.tableNode = node


def _positional_count(slot, available: int) -> int:
    import inspect

    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return available
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return available
    return min(available, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                              for p in parameters))


def _value(element):
    child = list(element)[0]
    text = child.text or ""
    if child.tag == "bool":
        return text == "true"
    if child.tag in ("number", "double"):
        return float(text) if "." in text else int(text)
    return text


def load_ui(path=UI_FILE) -> tuple[Widget, dict[str, Widget]]:
    """(root widget, {name: widget}) of a Qt Designer file."""
    root_element = ElementTree.parse(path).getroot().find("widget")
    widgets = {}

    def build(element):
        properties = {p.get("name"): _value(p) for p in element.findall("property")}
        items = [_value(i.find("property")) for i in element.findall("item")
                 if i.find("property") is not None]
        widget = Widget(element.get("class"), element.get("name"), properties, items)
        widgets[widget.objectName] = widget
        for child in element.iter("widget"):
            if child is not element and child.get("name") not in widgets:
                build(child)
        return widget

    return build(root_element), widgets


# --- parameterNodeWrapper -----------------------------------------------------------------
class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


def _base_type(annotation):
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return base, extras
    return annotation, []


# the widget classes Slicer's guiConnectors.py binds to each parameter type
CONNECTORS = {bool: {"QCheckBox", "ctkCheckBox", "QPushButton"}, int: {"QSpinBox", "QSlider"},
              float: {"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget",
                      "ctkDoubleSpinBox", "qMRMLSpinBox"},
              str: {"QLineEdit", "QLabel", "QTextEdit"}, pathlib.Path: {"ctkPathLineEdit",
                                                                        "ctkDirectoryButton"}}
CHOICE_WIDGETS = {"QComboBox", "ctkComboBox"}


def connector_accepts(annotation, widget_class: str) -> bool:
    base, extras = _base_type(annotation)
    if any(isinstance(e, Choice) for e in extras):
        return widget_class in CHOICE_WIDGETS
    if isinstance(base, type) and issubclass(base, slicer.vtkMRMLNode):
        return widget_class == "qMRMLNodeComboBox"
    return widget_class in CONNECTORS.get(base, set())


def parameterNodeWrapper(cls):
    """A class whose typed fields live in a vtkMRMLScriptedModuleNode (values as parameters,
    MRML nodes as references), firing the node's ModifiedEvent on every change."""
    hints = typing.get_type_hints(cls, include_extras=True)
    defaults = {name: getattr(cls, name, None) for name in hints}

    class Wrapper:
        allParameters = hints

        def __init__(self, node):
            object.__setattr__(self, "_node", node)
            object.__setattr__(self, "_values", {})
            for name, annotation in hints.items():
                base, _ = _base_type(annotation)
                if not (isinstance(base, type) and issubclass(base, slicer.vtkMRMLNode)):
                    self._values[name] = (defaults[name] if defaults[name] is not None
                                          else base())

        def __getattr__(self, name):
            if name not in hints:
                raise AttributeError(name)
            base, _ = _base_type(hints[name])
            if isinstance(base, type) and issubclass(base, slicer.vtkMRMLNode):
                return self._node.GetNodeReference(name)
            return self._values[name]

        def __setattr__(self, name, value):
            if name not in hints:
                raise AttributeError(f"{cls.__name__} has no parameter {name!r}")
            base, _ = _base_type(hints[name])
            if isinstance(base, type) and issubclass(base, slicer.vtkMRMLNode):
                self._node.SetNodeReferenceID(name, value.GetID() if value else None)
            else:
                self._values[name] = base(value)
                self._node.SetParameter(name, str(value))
            self._node.Modified()

        def AddObserver(self, event, callback, priority=0.0):
            return self._node.AddObserver(event, callback, priority)

        def RemoveObserver(self, tag):
            self._node.RemoveObserver(tag)

        def connectGui(self, ui):
            bound = []
            for widget in vars(ui).values():
                name = getattr(widget, "properties", {}).get("SlicerParameterName")
                if name is None:
                    continue
                if name not in hints:
                    raise RuntimeError(f"{widget.objectName}: no parameter {name!r}")
                if not connector_accepts(hints[name], widget.className):
                    raise RuntimeError(f"Unable to create GUI connector from {hints[name]} "
                                       f"to {widget.className}")
                self._bind(widget, name)
                bound.append(widget.objectName)
            return bound

        def _bind(self, widget, name):
            def update(*args):
                if widget.className in CHOICE_WIDGETS:
                    setattr(self, name, widget.currentText)
                elif widget.className == "qMRMLNodeComboBox":
                    setattr(self, name, widget.currentNode())
                elif widget.className == "QCheckBox":
                    setattr(self, name, widget.checked)
                elif widget.className == "ctkPathLineEdit":
                    setattr(self, name, widget.currentPath)
                else:
                    setattr(self, name, widget.value)

            for signal in ("valueChanged", "currentIndexChanged", "toggled",
                           "currentNodeChanged", "currentPathChanged"):
                widget.connect(signal, update)
            value = getattr(self, name)
            if widget.className in CHOICE_WIDGETS:
                widget.currentText = value
            elif widget.className == "qMRMLNodeComboBox":
                widget._node = value
            elif widget.className == "QCheckBox":
                widget.checked = value
            elif widget.className in ("QSpinBox", "QDoubleSpinBox"):
                widget.value = value

        def disconnectGui(self, tag):
            pass

    Wrapper.__name__ = cls.__name__
    return Wrapper


# --- module base classes and the application ----------------------------------------------
class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleLogic:
    def getParameterNode(self):
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode("ImmunoDiff", "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag("ImmunoDiff")
            node.SetModuleName("ImmunoDiff")
            scene.AddNode(node)
        return node


class ScriptedLoadableModuleWidget:
    made: list = []  # every panel made, cleaned up when the test's module is unloaded

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.made.append(self)
        self.parent = parent or types.SimpleNamespace(isEntered=True)
        self.layout = types.SimpleNamespace(addWidget=lambda widget: None)

    def setup(self):
        pass

    def resourcePath(self, relative: str) -> str:
        return str(MODULE_FILE.parent / "Resources" / relative)


class ScriptedLoadableModuleTest:
    pass


class Timer:
    def __init__(self):
        self.active = False
        self._slots = []

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        self._slots.append(slot)

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def fire(self):
        for slot in self._slots:
            slot()


class FileDialog:
    """QFileDialog's static choosers, answered by ``Dialogs.folder`` ("" = cancelled)."""

    def __init__(self, dialogs):
        self._dialogs = dialogs

    def getExistingDirectory(self, parent=None, caption="", directory="", *args):  # noqa: N802
        self._dialogs.asked_folders.append(caption)
        return str(self._dialogs.folder)


class StartupEnvironment:
    """QProcessEnvironment of the environment the application started in (here: this
    process's), what slicer.util.launchConsoleProcess starts children with."""

    def __init__(self):
        import os

        self._values = dict(os.environ)

    def keys(self):
        return list(self._values)

    def value(self, name):
        return self._values[name]


class Dialogs:
    """What the module asked or showed the user; ``answer`` is every confirmation's reply,
    ``folder`` every folder chooser's."""

    def __init__(self):
        self.confirmations, self.errors, self.installed = [], [], []
        self.answer = True
        self.folder, self.asked_folders = "", []

    def confirm(self, text, *args, **kwargs):
        self.confirmations.append(text)
        return self.answer

    def error(self, text, *args, detailedText="", **kwargs):
        self.errors.append(f"{text} {detailedText}".strip())

    @contextlib.contextmanager
    def try_with_error_display(self, message="", waitCursor=False):
        try:
            yield
        except Exception as error:  # the application shows it in a dialog
            self.errors.append(f"{message} {error}")


@contextlib.contextmanager
def module_under_test(monkeypatch, blocked: tuple[str, ...] = ()):
    """Import ImmunoDiff.py with the stand-ins in place (and the top-level packages in
    ``blocked`` made unimportable); yields (module, dialogs). ``slicer.mrmlScene`` is a fresh
    real scene."""
    dialogs = Dialogs()
    scene = slicer.vtkMRMLScene()
    widgets_of_last_ui = {}

    def load(path):
        root, widgets = load_ui(path)
        widgets_of_last_ui.clear()
        widgets_of_last_ui.update(widgets)
        return root

    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(
        connect=lambda *a: None, temporaryPath=None, layoutManager=lambda: None,
        processEvents=lambda: None, startupEnvironment=StartupEnvironment), raising=False)
    monkeypatch.setattr(slicer, "qSlicerMarkupsPlaceWidget",
                        types.SimpleNamespace(ForcePlaceSingleMarkup=1), raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", load, raising=False)
    monkeypatch.setattr(slicer.util, "childWidgetVariables",
                        lambda root: types.SimpleNamespace(**widgets_of_last_ui), raising=False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", dialogs.confirm, raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", dialogs.error, raising=False)
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", dialogs.try_with_error_display,
                        raising=False)
    monkeypatch.setattr(slicer.util, "pip_install", dialogs.installed.append, raising=False)
    fakes = {
        "qt": types.SimpleNamespace(QTimer=Timer, QFileDialog=FileDialog(dialogs)),
        "slicer.parameterNodeWrapper": types.SimpleNamespace(
            parameterNodeWrapper=parameterNodeWrapper, Choice=Choice, WithinRange=WithinRange),
        "slicer.ScriptedLoadableModule": types.SimpleNamespace(
            ScriptedLoadableModule=ScriptedLoadableModule,
            ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
            ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
            ScriptedLoadableModuleTest=ScriptedLoadableModuleTest),
    }
    for name, fake in fakes.items():
        monkeypatch.setitem(sys.modules, name, fake)

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    blocker = Block()
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in blocked}
    for name in saved:
        del sys.modules[name]
    real_find_spec = importlib.util.find_spec

    def find_spec(name, package=None):
        if name.split(".")[0] in blocked:
            return None
        return real_find_spec(name, package)

    sys.meta_path.insert(0, blocker)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.syspath_prepend(str(MODULE_FILE.parent))  # as Slicer adds the module's folder
    for name in [m for m in sys.modules if m.split(".")[0] == "ImmunoDiffModuleLib"]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh with this test's stand-ins
    try:
        spec = importlib.util.spec_from_file_location("ImmunoDiff", MODULE_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module, dialogs
    finally:
        for widget in ScriptedLoadableModuleWidget.made:  # as Slicer does on exit
            widget.cleanup()
        ScriptedLoadableModuleWidget.made.clear()
        sys.meta_path.remove(blocker)
        sys.modules.update(saved)
