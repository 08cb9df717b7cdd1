// The /docs page: Swagger UI (vendored in swagger-ui/, see its package.json for the version)
// over the coordinator's own /openapi.json. Nothing is fetched from another host: no
// validator badge (validatorUrl null), no fonts, no analytics.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
