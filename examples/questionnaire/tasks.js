// The questionnaire's HTTP task in Node: POST /compare gets both pages' answers.
const { serve } = require("../common/signature.js");

function compare({ kwargs }) {
  const flora = kwargs.flora_page3.responses;
  const fauna = kwargs.fauna_page6.responses;
  const differences = Object.keys(flora).filter((q) => q in fauna && flora[q] !== fauna[q]).sort();
  return [200, { same: differences.length === 0, differences, by: "node" }];
}

serve(Number(process.argv[2]), { "/compare": compare });
