// kn book: ipywidgets' HTML manager (@jupyter-widgets/html-manager 1.x) typesets widget labels
// with the MathJax 2 API, `MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])`; the book loads
// MathJax 3, which has no `Hub`, so each widget label would throw. This gives MathJax 3 a `Hub`
// whose Queue typesets the element with `MathJax.typesetPromise`. It is loaded on widget pages
// only, before the manager (_config.yml: nb_ipywidgets_js), and runs when the deferred MathJax
// script has replaced its configuration object by MathJax itself (DOMContentLoaded), before the
// manager renders the widgets (window load).
(function () {
  "use strict";
  function install() {
    var mj = window.MathJax;
    if (!mj || !mj.version || mj.Hub) return;
    mj.Hub = {
      Queue: function () {
        var elements = [];
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (Array.isArray(job) && job[0] === "Typeset" && job[2]) elements.push(job[2]);
        }
        var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
        return ready.then(function () {
          return mj.typesetPromise ? mj.typesetPromise(elements.length ? elements : undefined) : null;
        }).catch(function (err) {
          console.warn("MathJax could not typeset a widget label:", err);
        });
      },
    };
  }
  install();
  document.addEventListener("DOMContentLoaded", install);
})();
