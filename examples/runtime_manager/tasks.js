// The runtime-manager example's HTTP tasks in Node.
const { serve } = require("../common/signature.js");

serve(Number(process.argv[2]), {
  "/compare": ({ kwargs }) => [200, { same: JSON.stringify(kwargs.flora_page3) === JSON.stringify(kwargs.fauna_page6) }],
  "/report": ({ session }) => [200, { report: `${session} complete`, by: "node" }],
});
