// The super-session example's HTTP tasks in Node.
const { serve } = require("../common/signature.js");

serve(Number(process.argv[2]), {
  "/store-page": ({ kwargs, session }) => [200, { stored: kwargs.pageSubmitted.page, session }],
  "/compare": ({ kwargs }) => {
    const flora = kwargs.flora_page3.responses;
    const fauna = kwargs.fauna_page6.responses;
    const differences = Object.keys(flora).filter((q) => q in fauna && flora[q] !== fauna[q]).sort();
    return [200, { same: differences.length === 0, differences }];
  },
  "/decide": ({ kwargs }) => [200, { decision: kwargs.applicantCompared.same ? "accept" : "review", by: "node" }],
});
