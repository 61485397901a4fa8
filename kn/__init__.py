"""kn: find, test and edit knowledge neurons in transformer language models."""
from .version import __version__

from .arch import FAMILIES, Family, UnsupportedModelError  # noqa: E402
from .models import LM, ModelNotFoundError, load, wrap  # noqa: E402
from .quadrature import RULES  # noqa: E402
from .amig import AMIG  # noqa: E402
from .baselines import BASELINES  # noqa: E402
from . import settings  # noqa: E402
from .settings import IG, Activation, GradXAct  # noqa: E402
from .attribution import activations, attribute, grad_x_act, scores  # noqa: E402
from .logprob import LogProbIncrease, log_prob_increase  # noqa: E402  (registers method "logprob")
from .probing import answer_logprob, answer_logprobs, answer_prob, answer_rank, probe  # noqa: E402
from .interventions import amplify, scaled, suppress  # noqa: E402
from .localization import Located, coarse, locate, locate_with_scores, refine, tune_share  # noqa: E402
from .calibration import Calibration, calibrate  # noqa: E402
from .fast_settings import fast_setting  # noqa: E402
from .verification import Verification, ratio_of_means, verify  # noqa: E402
from .degenerate import degenerate_pairs, degenerate_sets, suppressed_probs  # noqa: E402
from . import allocator, editing, recording, widgets  # noqa: E402  (widgets imports ipywidgets only when used)
from .runs import RunResult, RunSettings, load_run, run  # noqa: E402  (the package is kn.runs; kn.run is the function)

__all__ = [
    "FAMILIES", "Family", "UnsupportedModelError", "LM", "ModelNotFoundError", "load", "wrap",
    "RULES", "AMIG", "BASELINES", "settings", "IG", "Activation", "GradXAct", "LogProbIncrease", "activations", "attribute", "grad_x_act",
    "log_prob_increase", "scores",
    "answer_logprob", "answer_logprobs", "answer_prob", "answer_rank", "probe", "amplify", "scaled", "suppress",
    "coarse", "locate", "locate_with_scores", "Located", "refine", "tune_share", "Calibration", "calibrate", "fast_setting", "Verification", "ratio_of_means", "verify",
    "degenerate_pairs", "degenerate_sets", "suppressed_probs",
    "allocator", "editing", "recording", "widgets", "RunResult", "RunSettings", "load_run", "run",
]
