// Compile-time check (tsc --noEmit in npm test): the client's types fit the generated schema.
import { TriggersClient, type FireAnswer, type Instance } from "../src/index.js";

export async function usage(client: TriggersClient): Promise<string[]> {
  await client.configure("applicant:1", {
    tasks: { t_compare: { after: ["flora_page3", "fauna_page6"], unless: ["withdrawn"], run: "http://127.0.0.1:3000/c" } },
  });
  const fired: FireAnswer = await client.fire("applicant:1", "flora_page3", { page: 3 });
  const names: string[] = [...fired.scheduled];
  for await (const instance of client.instances("applicant:1", { status: "finished" })) {
    const checked: Instance = instance;
    names.push(checked.name);
  }
  return names;
}
