import { type InputHTMLAttributes, useId } from "react";
import { sentence } from "../errors.js";

interface FieldProps extends InputHTMLAttributes<HTMLInputElement> {
  readonly label: string;
  /** Violations from the server (`must be at least 8 characters`), shown under the input. */
  readonly errors?: readonly string[];
  readonly hint?: string;
}

/** A labelled input with its hint and errors wired up for assistive technology. */
export function Field({ label, errors = [], hint, id, ...input }: FieldProps) {
  const fallbackId = useId();
  const inputId = id ?? fallbackId;
  const hintId = `${inputId}-hint`;
  const errorId = `${inputId}-error`;
  const invalid = errors.length > 0;
  const describedBy = [invalid ? errorId : undefined, hint ? hintId : undefined]
    .filter(Boolean)
    .join(" ");
  return (
    <div className={`field${invalid ? " field--invalid" : ""}`}>
      <label htmlFor={inputId}>{label}</label>
      <input
        id={inputId}
        aria-invalid={invalid || undefined}
        aria-describedby={describedBy || undefined}
        {...input}
      />
      {invalid && (
        <p className="field__error" id={errorId}>
          {errors.map((e) => sentence(`${label} ${e}`)).join(" ")}
        </p>
      )}
      {hint && !invalid && (
        <p className="field__hint" id={hintId}>
          {hint}
        </p>
      )}
    </div>
  );
}
