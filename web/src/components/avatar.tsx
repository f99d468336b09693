/**
 * Initials on a colour derived from `seed` (the user id, so one person has
 * one colour everywhere): stable, and no images to load.
 */
export function Avatar({
  name,
  seed = name,
  size = "md",
}: {
  readonly name: string;
  readonly seed?: string;
  readonly size?: "sm" | "md";
}) {
  let hash = 0;
  for (const ch of seed) hash = (hash * 31 + (ch.codePointAt(0) ?? 0)) >>> 0;
  const hue = hash % 360;
  // "Ada Lovelace" → AL; a username ("ada-3f9c") → A.
  const words = name.trim().split(/\s+/).filter(Boolean);
  const initials =
    words.length > 1
      ? `${words[0]![0]}${words[1]![0]}`.toUpperCase()
      : (name.trim()[0]?.toUpperCase() ?? "?");
  return (
    <span
      className={`avatar avatar--${size}`}
      style={{ backgroundColor: `hsl(${hue} 55% 45%)` }}
      aria-hidden="true"
    >
      {initials}
    </span>
  );
}
