/** Median of the finite values (NaN when there are none). */
export function median(values: readonly number[]): number {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

export function min(values: readonly number[]): number {
  const v = values.filter(Number.isFinite);
  return v.length === 0 ? Number.NaN : Math.min(...v);
}

export function max(values: readonly number[]): number {
  const v = values.filter(Number.isFinite);
  return v.length === 0 ? Number.NaN : Math.max(...v);
}

/** a / b, NaN when either is missing. */
export function ratio(a: number | undefined, b: number | undefined): number {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) {
    return Number.NaN;
  }
  return a / b;
}

/** `12,345` (no decimals). */
export function int(n: number | undefined): string {
  return n === undefined || !Number.isFinite(n) ? "—" : Math.round(n).toLocaleString("en-US");
}

/** `1.23` with `digits` decimals. */
export function fixed(n: number | undefined, digits = 2): string {
  return n === undefined || !Number.isFinite(n) ? "—" : n.toFixed(digits);
}

/** `0.87×`. */
export function times(n: number | undefined): string {
  return n === undefined || !Number.isFinite(n) ? "—" : `${n.toFixed(2)}×`;
}

/** `12.3 %`. */
export function pct(n: number | undefined, digits = 1): string {
  return n === undefined || !Number.isFinite(n) ? "—" : `${(n * 100).toFixed(digits)} %`;
}

/** Bytes as `12.3 MB` / `4.5 KB`. */
export function bytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return "—";
  const abs = Math.abs(n);
  if (abs >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  if (abs >= 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${Math.round(n)} B`;
}
