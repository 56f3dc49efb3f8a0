// The reference SDK's "Build an AI code executor" tutorial, ported to
// @sandboxd/sdk: take a question, have a model write Python for it, run the
// code in a sandbox, and answer { success, question, code, output, error }.
//
// handleExecute is the tutorial's Worker fetch handler, unchanged but for
// the import and getSandbox's first argument: it runs as is in a Cloudflare
// Worker, Deno, Bun or Node. Run here, the file is a command:
//
//   node dist/index.js --question "What is the 10th Fibonacci number?"
//   node dist/index.js --code 'print(sum(range(101)))'
//   node dist/index.js --serve 8787      # POST /execute {"question": "..."}
//
// With ANTHROPIC_API_KEY set, Claude writes the code (the Messages API over
// fetch, no SDK needed). Without it, give the code yourself (`code` in the
// body, or --code), or the built-in Fibonacci program stands in for the
// model's answer. The sandbox, not the model, is what makes running it safe.
// The daemon is found through SANDBOX_URL and SANDBOX_TOKEN.
import { SandboxClient, getSandbox, TimeoutError } from "@sandboxd/sdk";
import { createServer } from "node:http";

const client = SandboxClient.fromEnv();

// What a model would answer to the default question.
const DEFAULT_QUESTION = "What is the 10th Fibonacci number?";
const DEFAULT_CODE = `def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

print(fibonacci(10))
`;

/** Asks Claude for Python code answering the question, as the tutorial does. */
async function generateCode(question: string, apiKey: string): Promise<string> {
  const resp = await fetch("https://api.anthropic.com/v1/messages", {
    method: "POST",
    headers: { "x-api-key": apiKey, "anthropic-version": "2023-06-01", "content-type": "application/json" },
    body: JSON.stringify({
      model: "claude-sonnet-4-5",
      max_tokens: 1024,
      messages: [{
        role: "user",
        content: `Generate Python code to answer: "${question}"

Requirements:
- Use only Python standard library
- Print the result using print()
- Keep code simple and safe

Return ONLY the code, no explanations.`,
      }],
    }),
  });
  if (!resp.ok) throw new Error(`Anthropic API: HTTP ${resp.status}`);
  const msg = (await resp.json()) as { content?: { type: string; text?: string }[] };
  const first = msg.content?.[0];
  return first?.type === "text" ? (first.text ?? "").replace(/^```(?:python)?\n|```\s*$/g, "") : "";
}

/** The tutorial's handler: POST /execute with { question } (or { question, code }). */
export async function handleExecute(request: Request, apiKey = process.env.ANTHROPIC_API_KEY): Promise<Response> {
  if (request.method !== "POST" || new URL(request.url).pathname !== "/execute") {
    return new Response('POST /execute with { "question": "your question" }');
  }
  try {
    const { question, code } = (await request.json()) as { question?: string; code?: string };
    if (!question && !code) {
      return Response.json({ error: "Question is required" }, { status: 400 });
    }
    let generatedCode = code ?? "";
    if (!generatedCode) generatedCode = apiKey ? await generateCode(question!, apiKey) : question === DEFAULT_QUESTION ? DEFAULT_CODE : "";
    if (!generatedCode) {
      return Response.json({ error: "Failed to generate code (set ANTHROPIC_API_KEY, or send code)" }, { status: 500 });
    }

    // Execute the code in a sandbox.
    const sandbox = getSandbox(client, "demo-user");
    await sandbox.writeFile("/tmp/code.py", generatedCode);
    const result = await sandbox.exec("python3 /tmp/code.py", { timeout: 30_000 });

    return Response.json({
      success: result.success,
      question,
      code: generatedCode,
      output: result.stdout,
      error: result.stderr,
    });
  } catch (error: any) {
    if (error instanceof TimeoutError) {
      return Response.json({ success: false, error: "the code ran for more than 30 s and was killed", output: error.result?.stdout ?? "" });
    }
    return Response.json({ error: "Internal server error", message: error.message, code: error.code }, { status: 500 });
  }
}

/** --serve PORT: the handler behind a Node HTTP server, like `wrangler dev`. */
function serve(port: number): void {
  createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const request = new Request(`http://localhost:${port}${req.url}`, {
      method: req.method,
      headers: req.headers as Record<string, string>,
      body: req.method === "GET" || req.method === "HEAD" ? undefined : Buffer.concat(chunks),
    });
    const response = await handleExecute(request);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  }).listen(port, "127.0.0.1", () => console.error(`listening on http://127.0.0.1:${port}/execute`));
}

async function main(args: string[]): Promise<void> {
  const flag = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const port = flag("--serve");
  if (port) return serve(Number(port));
  const code = flag("--code");
  const question = flag("--question") ?? (code ? undefined : DEFAULT_QUESTION);
  const response = await handleExecute(new Request("http://localhost/execute", { method: "POST", body: JSON.stringify({ question, code }) }));
  console.log(JSON.stringify(await response.json(), null, 2));
  if (!response.ok) process.exitCode = 1;
}

await main(process.argv.slice(2));
