import { describeCommandsOver } from "./matrix.js";

describeCommandsOver("tls");
